// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm skeleton selftests: the system fd and VM fd as a KVM client sees
 * them. Every expectation here is what stock KVM does on x86, so a VMM
 * written for /dev/kvm gets the same answers from /dev/rkvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/rkvm.h>

#include "kselftest_harness.h"
#include "rkvm_caps.h"
#include "rkvm_util.h"

/*
 * The capabilities rkvm implements, with the value KVM would give: the
 * module's own table (rkvm/caps.rs, as C in the generated rkvm_caps.h).
 */
static long expected_cap(unsigned long cap)
{
	return rkvm_expected_cap(cap, sysconf(_SC_NPROCESSORS_ONLN));
}

static int open_dev(void)
{
	int fd = open(rkvm_dev_path(), O_RDWR | O_CLOEXEC);

	if (fd < 0)
		ksft_exit_fail_msg("open %s: %s\n", rkvm_dev_path(), strerror(errno));
	return fd;
}

TEST(api_version)
{
	int fd = open_dev();

	ASSERT_EQ(12, xioctl(fd, KVM_GET_API_VERSION, 0));
	ASSERT_EQ(-EINVAL, xioctl(fd, KVM_GET_API_VERSION, 1));
	close(fd);
}

TEST(vcpu_mmap_size)
{
	int fd = open_dev();

	/* kvm_run page + PIO data page; no coalesced-MMIO ring page. */
	ASSERT_EQ(RKVM_VCPU_MMAP_PAGES * getpagesize(), xioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0));
	ASSERT_EQ(-EINVAL, xioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 1));
	close(fd);
}

TEST(check_extension_reports_only_what_works)
{
	int fd = open_dev();
	int vm = xioctl(fd, KVM_CREATE_VM, 0);
	unsigned long cap;

	ASSERT_LE(0, vm);
	for (cap = 0; cap < 1024; cap++) {
		long sys = xioctl(fd, KVM_CHECK_EXTENSION, cap);
		long per_vm = xioctl(vm, KVM_CHECK_EXTENSION, cap);

		EXPECT_EQ(expected_cap(cap), sys) TH_LOG("cap %lu", cap);
		EXPECT_EQ(sys, per_vm) TH_LOG("cap %lu on the VM fd", cap);
	}
	/* Huge and negative capability numbers are just unknown. */
	EXPECT_EQ(0, xioctl(fd, KVM_CHECK_EXTENSION, ~0UL));
	EXPECT_EQ(0, xioctl(fd, KVM_CHECK_EXTENSION, 1UL << 40));
	close(vm);
	close(fd);
}

TEST(create_vm_types)
{
	int fd = open_dev();
	unsigned long type;
	int vm;

	vm = xioctl(fd, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	ASSERT_LE(0, vm);
	ASSERT_EQ(FD_CLOEXEC, fcntl(vm, F_GETFD) & FD_CLOEXEC);
	ASSERT_EQ(O_RDWR, fcntl(vm, F_GETFL) & O_ACCMODE);
	close(vm);

	for (type = 1; type < 64; type++)
		EXPECT_EQ(-EINVAL, xioctl(fd, KVM_CREATE_VM, type)) TH_LOG("type %lu", type);
	EXPECT_EQ(-EINVAL, xioctl(fd, KVM_CREATE_VM, ~0UL));
	close(fd);
}

TEST(vm_fd_is_an_anon_inode)
{
	int fd = open_dev();
	int vm = xioctl(fd, KVM_CREATE_VM, 0);
	char path[64], target[64] = { 0 };

	ASSERT_LE(0, vm);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", vm);
	ASSERT_LT(0, readlink(path, target, sizeof(target) - 1));
	ASSERT_STREQ("anon_inode:rkvm-vm", target);
	close(vm);
	close(fd);
}

TEST(unknown_ioctls)
{
	int fd = open_dev();
	int vm = xioctl(fd, KVM_CREATE_VM, 0);
	char c;

	ASSERT_LE(0, vm);
	/* System fd: KVM answers anything unknown with EINVAL... */
	EXPECT_EQ(-EINVAL, xioctl(fd, _IO(KVMIO, 0xff), 0));
	EXPECT_EQ(-EINVAL, xioctl(fd, _IO('x', 1), 0));
	EXPECT_EQ(-EINVAL, xioctl(fd, KVM_RUN, 0));
	/* ...and VM fds with ENOTTY, including what rkvm does not do yet. */
	EXPECT_EQ(-ENOTTY, xioctl(vm, _IO(KVMIO, 0xff), 0));
	EXPECT_EQ(-ENOTTY, xioctl(vm, _IO('x', 1), 0));
	EXPECT_EQ(-ENOTTY, xioctl(vm, KVM_CREATE_VM, 0));
	/* A VM fd has no read(). */
	EXPECT_EQ(-1, read(vm, &c, 1));
	close(vm);
	close(fd);
}

TEST(vm_fd_only_works_in_its_creators_mm)
{
	int fd = open_dev();
	int vm = xioctl(fd, KVM_CREATE_VM, 0);
	int status;
	pid_t pid;

	ASSERT_LE(0, vm);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(xioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM) == -EIO ? 0 : 1);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("child's ioctl did not fail with EIO");
	EXPECT_EQ(1, xioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	/* The system fd has no owner: a child may create its own VMs. */
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int child_vm = xioctl(fd, KVM_CREATE_VM, 0);

		_exit(child_vm >= 0 &&
		      xioctl(child_vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM) == 1 ? 0 : 1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	close(vm);
	close(fd);
}

TEST(vm_outlives_system_fd)
{
	int fd = open_dev();
	int vm = xioctl(fd, KVM_CREATE_VM, 0);

	ASSERT_LE(0, vm);
	close(fd);
	EXPECT_EQ(1, xioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	close(vm);
}

TEST(create_close_loop)
{
	enum { HELD = 500 };
	int loops = stress_iters(2000), held = stress_iters(HELD);
	int fd = open_dev();
	int vms[HELD];
	int i;

	for (i = 0; i < loops; i++) {
		int vm = xioctl(fd, KVM_CREATE_VM, 0);

		ASSERT_LE(0, vm) TH_LOG("iteration %d", i);
		close(vm);
	}
	for (i = 0; i < held; i++) {
		vms[i] = xioctl(fd, KVM_CREATE_VM, 0);
		ASSERT_LE(0, vms[i]) TH_LOG("VM %d", i);
	}
	/* Close the system fd first, then the VMs in reverse order. */
	close(fd);
	for (i = held - 1; i >= 0; i--)
		ASSERT_EQ(0, close(vms[i]));
}

struct race_arg {
	int iterations;
	int seed;
	int failures;
};

static void *open_create_close(void *p)
{
	struct race_arg *a = p;
	unsigned int seed = a->seed;
	int i;

	for (i = 0; i < a->iterations; i++) {
		int fd = open(rkvm_dev_path(), O_RDWR);
		int vm = fd < 0 ? -1 : xioctl(fd, KVM_CREATE_VM, 0);

		if (fd < 0 || vm < 0 ||
		    xioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES) != 1) {
			a->failures++;
		}
		if (rand_r(&seed) & 1) {
			close(vm);
			close(fd);
		} else {
			close(fd);
			close(vm);
		}
	}
	return NULL;
}

TEST(threads_open_create_close_race)
{
	enum { THREADS = 8 };
	struct race_arg args[THREADS];
	pthread_t t[THREADS];
	int i;

	for (i = 0; i < THREADS; i++) {
		args[i] = (struct race_arg){ .iterations = stress_iters(300), .seed = i + 1 };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, open_create_close, &args[i]));
	}
	for (i = 0; i < THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, args[i].failures) TH_LOG("thread %d", i);
	}
}

struct ioctl_vs_close {
	int vm;
	volatile int stop;
	long bad;
};

static void *ioctl_loop(void *p)
{
	struct ioctl_vs_close *a = p;

	while (!a->stop) {
		long r = xioctl(a->vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM);

		/* Either the ioctl ran, or the fd was already gone. */
		if (r != 1 && r != -EBADF)
			a->bad++;
	}
	return NULL;
}

TEST(ioctl_races_with_close)
{
	int fd = open_dev();
	int round;

	for (round = 0; round < stress_iters(200); round++) {
		struct ioctl_vs_close a = { .vm = xioctl(fd, KVM_CREATE_VM, 0) };
		pthread_t t;

		ASSERT_LE(0, a.vm);
		ASSERT_EQ(0, pthread_create(&t, NULL, ioctl_loop, &a));
		usleep(round % 7 * 50);
		close(a.vm);
		a.stop = 1;
		ASSERT_EQ(0, pthread_join(t, NULL));
		ASSERT_EQ(0, a.bad);
	}
	close(fd);
}

TEST_HARNESS_MAIN
