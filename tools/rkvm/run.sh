#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the emulated AMD host (QEMU TCG, SVM + NPT), loads rkvm, shows what
# it detected and which capabilities /dev/rkvm reports, runs the demo VMM on
# it, and boots the test kernel on it with 2 vCPUs with rkvm's own VMM
# (tools/rkvm/vmm). On a terminal it leaves a shell on the serial console
# ('poweroff -f' to quit); otherwise the guest powers off by itself.
#
# RKVM_MACHINE=bochs (make run MACHINE=bochs) boots the emulated Intel host
# (Bochs, VMX + EPT) instead: no shell there (Bochs' console is a file), the
# guest powers off by itself after the demo and the Linux boot, about 4
# minutes in all, and a boot that does not finish is stopped after 20
# minutes.
#
# Non-interactive runs print the guest's side of the run and exit non-zero
# if the demo or the Linux boot fails or the machine does not finish.
# Serial log: out/run/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

machine=${RKVM_MACHINE:-qemu}
case $machine in
qemu|bochs) ;;
*) die "RKVM_MACHINE: unknown machine '$machine' (qemu, bochs)" ;;
esac

"$RKVM_TOOLS/setup.sh"
kdir=$("$RKVM_TOOLS/build-kernel.sh")
"$RKVM_TOOLS/build-module.sh"
"$RKVM_TOOLS/build-selftests.sh"
mkdir -p "$RKVM_OUT/run"
"$RKVM_TOOLS/mkinitramfs.sh" "$RKVM_OUT/run/initramfs.cpio.gz"

log="$RKVM_OUT/run/serial.log"
args=(--kernel "$kdir/build/arch/x86/boot/bzImage" --initrd "$RKVM_OUT/run/initramfs.cpio.gz"
	--log "$log")
rc=0
if [ "$machine" = qemu ]; then
	if [ -t 0 ] && [ -t 1 ]; then
		exec "$RKVM_TOOLS/run-qemu.sh" "${args[@]}" --interactive --append "rkvm.mode=run rkvm.shell=1"
	fi
	"$RKVM_TOOLS/run-qemu.sh" "${args[@]}" --timeout 600 --append "rkvm.mode=run" || rc=$?
else
	# nohz=off as in check.sh: a CPU that never woke from tickless idle
	# stalled Bochs runs.
	note "booting the emulated Intel host (Bochs, VMX + EPT); about 4 minutes"
	"$RKVM_TOOLS/run-bochs.sh" "${args[@]}" --timeout 1200 --append "nohz=off rkvm.mode=run" || rc=$?
fi
[ -f "$log" ] || die "no serial log from the $machine machine (exit $rc)"
# Show the guest's side of the run (the console log without kernel noise),
# and the output of rkvm-demo and rkvm-vmm (with its guest's console) whole.
tr -d '\r' < "$log" | awk '/^--- rkvm-(demo|vmm) / { vmm = 1 } /^rkvm-init: rkvm-(demo|vmm) / { vmm = 0 }
	vmm || /^(rkvm-init|\/dev\/rkvm|---|rkvm: )/' || true

if [ "$rc" != 0 ]; then
	echo "run: the $machine machine did not finish (exit $rc$([ "$rc" != 124 ] || echo ": timeout")); serial log: $log"
	exit 1
fi
demo=$(tr -d '\r' < "$log" | sed -n 's/^rkvm-init: rkvm-demo exited with status \([0-9]*\).*/\1/p' | head -1)
if grep -q '^rkvm-init: insmod rkvm.ko failed' "$log"; then
	echo "run: insmod rkvm.ko failed in the $machine machine; serial log: $log"
	exit 1
elif [ -z "$demo" ]; then
	echo "run: rkvm-demo did not report in the $machine machine; serial log: $log"
	exit 1
elif [ "$demo" != 0 ]; then
	why=$(tr -d '\r' < "$log" | grep -m1 '^rkvm-demo: \(KVM_RUN\|the guest did not\|unexpected\)' || true)
	echo "run: rkvm-demo failed in the $machine machine (exit status $demo${why:+: ${why#rkvm-demo: }})"
	exit 1
fi
echo "run: rkvm-demo passed in the $machine machine"
vmm=$(tr -d '\r' < "$log" | sed -n 's/^rkvm-init: rkvm-vmm exited with status \([0-9]*\).*/\1/p' | head -1)
if [ -z "$vmm" ]; then
	echo "run: rkvm-vmm did not report in the $machine machine; serial log: $log"
	exit 1
elif [ "$vmm" != 0 ]; then
	why=$(tr -d '\r' < "$log" | sed -n 's/^rkvm-vmm: \(.*\) after [0-9.]* s.*/\1/p' | tail -1)
	echo "run: rkvm-vmm failed in the $machine machine (exit status $vmm${why:+: $why})"
	exit 1
fi
echo "run: rkvm-vmm booted Linux with 2 vCPUs on rkvm in the $machine machine"
