# SPDX-License-Identifier: GPL-2.0
#
# Developer entry points. The module itself is built by Kbuild
# (make -C $KDIR M=$PWD); these targets set up everything around it.
#
#   make run     boot the emulated SVM host, load rkvm, show what it reports,
#                run the demo guest and boot Linux with 2 vCPUs on rkvm-vmm;
#                MACHINE=bochs: the VMX host instead
#   make check   every test: host unit tests, then selftests on the emulated
#                SVM (QEMU) and VMX (Bochs) hosts, then the QEMU boot test;
#                ends with "N passed, N failed"
#   make qemu-boot  the QEMU boot test alone: unmodified QEMU boots a Linux
#                guest with -accel kvm on rkvm inside the emulated SVM host
#                (RKVM_QEMU_BOOT_DEV=kvm: on stock KVM)
#   make bench   the same micro-benchmarks on stock KVM and on rkvm in the
#                emulated SVM and VMX hosts; prints the ratios rkvm/KVM
#                (RKVM_BENCH_MACHINES="qemu" or "bochs": one host only)
#   make module  build rkvm.ko against the cached test kernel
#   make setup   install packages, bindgen and the kernel source (as root)
#   make kernel  build (or reuse) the cached test kernel

TOOLS := tools/rkvm

.PHONY: all module setup kernel run check qemu-boot bench host-test clean

all: module

setup:
	$(TOOLS)/setup.sh

kernel: setup
	$(TOOLS)/build-kernel.sh >/dev/null

module: kernel
	$(TOOLS)/build-module.sh

host-test:
	$(TOOLS)/host-test.sh

run:
	$(if $(MACHINE),RKVM_MACHINE=$(MACHINE) )$(TOOLS)/run.sh

check:
	$(TOOLS)/check.sh

qemu-boot:
	RKVM_QEMU_BOOT=only $(TOOLS)/check.sh

bench:
	$(TOOLS)/bench.sh

clean:
	rm -rf out
	find rkvm -name '*.o' -o -name '*.cmd' -o -name '*.rmeta' -o -name '*.d' | xargs rm -f
	rm -f rkvm.ko rkvm.mod* Module.symvers modules.order .*.cmd
