// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm lifecycle selftests with guests that have run: the device, VM and
 * vCPU fds closed in every order (and while a vCPU is inside KVM_RUN),
 * processes killed or exiting while their guests spin (the kill must land
 * promptly), and a VM's fds used from a forked child, which KVM refuses
 * with EIO because the VM belongs to the parent's mm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#define OUT KVM_EXIT_IO_OUT

/* Generous: inside the emulated test machine every exit is slow. */
#define LIFE_TIMEOUT 300

GUEST_CODE_BLOCK(out_hlt, ".code32",
	"mov $0x42, %al\n"
	"out %al, $0x10\n"
	"hlt\n");

/* Reports once (out port 0x11), then spins without exiting. */
GUEST_CODE_BLOCK(spin, ".code64",
	"mov $1, %al\n"
	"out %al, $0x11\n"
	"1: jmp 1b\n");

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A VM with one vCPU that has run out_hlt to completion. */
static struct vcpu *ran_guest(struct __test_metadata *_metadata)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	struct vcpu *v;

	vm_load(vm, GUEST_CODE, out_hlt, out_hlt_end);
	v = vcpu_new(vm, 0, MODE_PROT32, GUEST_CODE, GUEST_STACK);
	if (run_expect_io(v, OUT, 1, 0x10, 0x42) ||
	    run_expect_exit(v, KVM_EXIT_HLT))
		return NULL;
	return v;
}

/* --- Closing the fds in every order. --------------------------------- */

enum { FD_SYS, FD_VM, FD_VCPU };

FIXTURE(close_order) {
	int unused;
};

FIXTURE_VARIANT(close_order) {
	int order[3];
};

FIXTURE_VARIANT_ADD(close_order, sys_vm_vcpu) { .order = { FD_SYS, FD_VM, FD_VCPU } };
FIXTURE_VARIANT_ADD(close_order, sys_vcpu_vm) { .order = { FD_SYS, FD_VCPU, FD_VM } };
FIXTURE_VARIANT_ADD(close_order, vm_sys_vcpu) { .order = { FD_VM, FD_SYS, FD_VCPU } };
FIXTURE_VARIANT_ADD(close_order, vm_vcpu_sys) { .order = { FD_VM, FD_VCPU, FD_SYS } };
FIXTURE_VARIANT_ADD(close_order, vcpu_sys_vm) { .order = { FD_VCPU, FD_SYS, FD_VM } };
FIXTURE_VARIANT_ADD(close_order, vcpu_vm_sys) { .order = { FD_VCPU, FD_VM, FD_SYS } };

FIXTURE_SETUP(close_order)
{
}

FIXTURE_TEARDOWN(close_order)
{
}

TEST_F_TIMEOUT(close_order, after_run, LIFE_TIMEOUT)
{
	struct vcpu *last;
	struct vm *vm;
	int round;

	for (round = 0; round < stress_iters(5); round++) {
		struct vcpu *v = ran_guest(_metadata);
		struct kvm_regs regs;
		bool open[3] = { true, true, true };
		int fds[3], i;

		ASSERT_NE(NULL, v);
		vm = v->vm;
		fds[FD_SYS] = vm->sys;
		fds[FD_VM] = vm->fd;
		fds[FD_VCPU] = v->fd;
		for (i = 0; i < 3; i++) {
			ASSERT_EQ(0, close(fds[variant->order[i]]));
			open[variant->order[i]] = false;
			/* What is still open still works. */
			if (open[FD_SYS])
				EXPECT_EQ(12, xioctl(fds[FD_SYS], KVM_GET_API_VERSION, 0));
			if (open[FD_VM])
				EXPECT_LE(0, xioctl(fds[FD_VM], KVM_CHECK_EXTENSION,
						    KVM_CAP_USER_MEMORY));
			if (open[FD_VCPU]) {
				EXPECT_EQ(0, xioctl(fds[FD_VCPU], KVM_GET_REGS,
						    (unsigned long)&regs));
				EXPECT_EQ(GUEST_CODE + (out_hlt_end - out_hlt), regs.rip);
			}
		}
		/* The kvm_run mapping outlives the fds. */
		EXPECT_EQ(KVM_EXIT_HLT, v->run->exit_reason);
		ASSERT_EQ(0, munmap(v->run, vm->run_size));
		ASSERT_EQ(0, munmap(vm->mem, vm->mem_size));
		free(v);
		free(vm->cpuid);
		free(vm);
	}
	/* And the device still runs guests. */
	last = ran_guest(_metadata);
	ASSERT_NE(NULL, last);
	vm = last->vm;
	vcpu_free(last);
	vm_free(vm);
}

/* --- Closing everything while a vCPU is inside KVM_RUN. -------------- */

FIXTURE(life) {
	int unused;
};

FIXTURE_SETUP(life)
{
}

FIXTURE_TEARDOWN(life)
{
}

struct runner {
	struct vcpu *v;
	volatile int result;	/* KVM_RUN's result, 1 while running */
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;

	r->result = run_until_exit(r->v);
	return NULL;
}

static void sigusr1(int sig)
{
}

TEST_F_TIMEOUT(life, close_fds_while_running, LIFE_TIMEOUT)
{
	struct sigaction sa = { .sa_handler = sigusr1 };
	struct runner r = { .result = 1 };
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	struct kvm_run *run;
	pthread_t t;
	int i;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	vm_load(vm, GUEST_CODE, spin, spin_end);
	r.v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	run = r.v->run;
	ASSERT_EQ(0, run_expect_io(r.v, OUT, 1, 0x11, 1));
	ASSERT_EQ(0, pthread_create(&t, NULL, run_thread, &r));
	usleep(100000);
	EXPECT_EQ(1, r.result);		/* spinning in the guest */
	close(r.v->fd);
	close(vm->fd);
	close(vm->sys);
	usleep(100000);
	EXPECT_EQ(1, r.result);		/* the fds' references keep it alive */
	/* A signal still gets the vCPU out. */
	for (i = 0; i < 1000 && r.result == 1; i++) {
		pthread_kill(t, SIGUSR1);
		usleep(10000);
	}
	pthread_join(t, NULL);
	EXPECT_EQ(-EINTR, r.result);
	EXPECT_EQ(KVM_EXIT_INTR, run->exit_reason);
	munmap(run, vm->run_size);
	munmap(vm->mem, vm->mem_size);
	free(r.v);
	free(vm->cpuid);
	free(vm);
}

/* --- Killing a process whose guests spin. ---------------------------- */

/*
 * The child: @nr vCPUs (threads) each run spin; after the first exit each
 * writes a byte to @ready and enters the guest for good.
 */
struct spinner {
	struct vcpu *v;
	int ready;
};

static int spinning;

static void *spin_thread(void *arg)
{
	struct spinner *s = arg;
	char c = 1;

	if (run_expect_io(s->v, OUT, 1, 0x11, 1))
		_exit(2);
	if (write(s->ready, &c, 1) != 1)
		_exit(3);
	__atomic_add_fetch(&spinning, 1, __ATOMIC_SEQ_CST);
	run_until_exit(s->v);
	_exit(4);		/* KVM_RUN must not come back */
}

static void spin_child(int nr, int ready, bool exit_instead)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	struct spinner s[8];
	pthread_t t;
	int i;

	vm_load(vm, GUEST_CODE, spin, spin_end);
	for (i = 0; i < nr; i++) {
		s[i].v = vcpu_new(vm, i, MODE_LONG64, GUEST_CODE,
				  GUEST_STACK - i * 0x1000);
		s[i].ready = ready;
		if (pthread_create(&t, NULL, spin_thread, &s[i]))
			_exit(5);
	}
	if (exit_instead) {
		/* Once all spin, the whole process exits under them. */
		while (__atomic_load_n(&spinning, __ATOMIC_SEQ_CST) < nr)
			usleep(1000);
		usleep(100000);
		exit(0);
	}
	for (;;)
		pause();
}

/*
 * Forks a child with @nr spinning vCPUs, waits until all are in the guest,
 * then SIGKILLs it (or, with @exit_instead, lets it exit while they spin)
 * and checks the child is gone within 10 s.
 */
static double kill_spinning(struct __test_metadata *_metadata, int nr,
			    bool exit_instead)
{
	int pipefd[2], status = 0, got = 0;
	struct pollfd pfd;
	double t0, waited;
	pid_t pid, w;
	char c;

	ASSERT_EQ(0, pipe(pipefd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		close(pipefd[0]);
		spin_child(nr, pipefd[1], exit_instead);
	}
	close(pipefd[1]);
	pfd.fd = pipefd[0];
	pfd.events = POLLIN;
	while (got < nr) {
		if (poll(&pfd, 1, 120000) != 1 || read(pipefd[0], &c, 1) != 1) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			TH_LOG("vCPUs not running: status %#x", status);
			_metadata->exit_code = KSFT_FAIL;
			return -1;
		}
		got++;
	}
	close(pipefd[0]);
	usleep(100000);		/* let them spin */
	t0 = now();
	if (!exit_instead)
		ASSERT_EQ(0, kill(pid, SIGKILL));
	do {
		w = waitpid(pid, &status, WNOHANG);
		if (w == 0)
			usleep(5000);
	} while (w == 0 && now() - t0 < (exit_instead ? 20 : 10));
	waited = now() - t0;
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	EXPECT_EQ(pid, w) TH_LOG("child still there after %.1f s", waited);
	if (exit_instead) {
		EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
			TH_LOG("status %#x", status);
	} else {
		EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
			TH_LOG("status %#x", status);
	}
	return waited;
}

static void kill_rounds(struct __test_metadata *_metadata, int rounds, int nr,
			bool exit_instead)
{
	double w, max = 0;
	int i;

	for (i = 0; i < rounds && !_metadata->exit_code; i++) {
		w = kill_spinning(_metadata, nr, exit_instead);
		max = w > max ? w : max;
	}
	TH_LOG("%d round(s), %d vCPU(s): gone %.3f s after the %s at most",
	       rounds, nr, max, exit_instead ? "exit" : "SIGKILL");
}

TEST_F_TIMEOUT(life, sigkill_spinning_vcpu, LIFE_TIMEOUT)
{
	kill_rounds(_metadata, stress_iters(5), 1, false);
}

TEST_F_TIMEOUT(life, sigkill_four_spinning_vcpus, LIFE_TIMEOUT)
{
	kill_rounds(_metadata, stress_iters(3), 4, false);
}

TEST_F_TIMEOUT(life, exit_with_spinning_vcpus, LIFE_TIMEOUT)
{
	kill_rounds(_metadata, 1, 2, true);
}

/* --- A VM used from another process. --------------------------------- */

TEST_F_TIMEOUT(life, fork_child_gets_eio, LIFE_TIMEOUT)
{
	struct vcpu *v = ran_guest(_metadata);
	struct kvm_regs regs;
	struct vm *vm;
	int status;
	pid_t pid;

	ASSERT_NE(NULL, v);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct vcpu *own;
		int fails = 0;

		/* The parent's VM: its vCPU and VM fds refuse the child. */
		if (xioctl(v->fd, KVM_RUN, 0) != -EIO)
			fails |= 1;
		if (xioctl(v->fd, KVM_GET_REGS, (unsigned long)&regs) != -EIO)
			fails |= 2;
		if (xioctl(v->vm->fd, KVM_CREATE_VCPU, 1) != -EIO)
			fails |= 4;
		/* The device fd is not bound to an mm. */
		if (xioctl(v->vm->sys, KVM_GET_API_VERSION, 0) != 12)
			fails |= 8;
		/* A VM of the child's own runs. */
		own = ran_guest(_metadata);
		if (!own)
			fails |= 16;
		_exit(fails);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status))
		TH_LOG("1: KVM_RUN, 2: KVM_GET_REGS, 4: KVM_CREATE_VCPU not EIO; "
		       "8: device fd, 16: own VM failed");
	/* The parent's VM is unharmed. */
	vcpu_set_mode(v, MODE_PROT32, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x10, 0x42));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(GUEST_CODE + (out_hlt_end - out_hlt), regs.rip);
	vm = v->vm;
	vcpu_free(v);
	vm_free(vm);
}

TEST_HARNESS_MAIN
