#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the emulated AMD host (QEMU TCG, SVM + NPT), loads rkvm and shows
# what it detected and which capabilities /dev/rkvm reports. On a terminal
# it leaves a shell on the serial console ('poweroff -f' to quit); otherwise
# the guest powers off by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$RKVM_TOOLS/setup.sh"
kdir=$("$RKVM_TOOLS/build-kernel.sh")
"$RKVM_TOOLS/build-module.sh"
"$RKVM_TOOLS/build-selftests.sh"
mkdir -p "$RKVM_OUT/run"
"$RKVM_TOOLS/mkinitramfs.sh" "$RKVM_OUT/run/initramfs.cpio.gz"

args=(--kernel "$kdir/build/arch/x86/boot/bzImage" --initrd "$RKVM_OUT/run/initramfs.cpio.gz"
	--log "$RKVM_OUT/run/serial.log")
if [ -t 0 ] && [ -t 1 ]; then
	exec "$RKVM_TOOLS/run-qemu.sh" "${args[@]}" --interactive --append "rkvm.mode=run rkvm.shell=1"
fi
"$RKVM_TOOLS/run-qemu.sh" "${args[@]}" --timeout 600 --append "rkvm.mode=run"
# Show the guest's side of the run (the console log without kernel noise),
# and rkvm-demo's output whole.
awk '/^--- rkvm-demo / { demo = 1 } /^rkvm-init: rkvm-demo / { demo = 0 }
	demo || /^(rkvm-init|\/dev\/rkvm|---|rkvm: )/' "$RKVM_OUT/run/serial.log" || true
