/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The fixture of the guest-running kselftests: a VM on $RKVM_DEV with
 * slot 0 of GUEST_MEM_SIZE (guest_lib.h), made before each test and
 * freed after it. Include after kselftest_harness.h and guest_lib.h.
 */
#ifndef SELFTEST_RKVM_GUEST_FIXTURE_H
#define SELFTEST_RKVM_GUEST_FIXTURE_H

FIXTURE(guest) {
	struct vm *vm;
};

FIXTURE_SETUP(guest)
{
	self->vm = vm_new(GUEST_MEM_SIZE);
}

FIXTURE_TEARDOWN(guest)
{
	vm_free(self->vm);
}

#endif /* SELFTEST_RKVM_GUEST_FIXTURE_H */
