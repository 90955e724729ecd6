#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the test kernel under QEMU TCG with SVM + NPT (the emulated AMD host).
#   run-qemu.sh --kernel BZIMAGE --initrd INITRD --log SERIAL_LOG --timeout S
#               [--append "EXTRA CMDLINE"] [--interactive] [--icount]
#               [--mem SIZE]   (guest RAM, QEMU's -m syntax; default 2G)
# Non-interactive runs end when the guest powers off (QEMU exits), or are
# killed after --timeout seconds (exit 124). --interactive puts the serial
# console on this terminal (and still logs it). ACPI gives the guest both
# CPUs and a calibrated TSC (see toolchain.md's QEMU traps).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kernel= initrd= log= timeout=600 append= interactive=0 icount=0 mem=2G
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=$2; shift ;;
	--initrd) initrd=$2; shift ;;
	--log) log=$2; shift ;;
	--timeout) timeout=$2; shift ;;
	--append) append=$2; shift ;;
	--interactive) interactive=1 ;;
	--icount) icount=1 ;;
	--mem) mem=$2; shift ;;
	*) die "run-qemu.sh: unknown argument $1" ;;
	esac
	shift
done
[ -f "$kernel" ] && [ -f "$initrd" ] && [ -n "$log" ] || die "run-qemu.sh: need --kernel, --initrd and --log"

# EPYC lists features TCG cannot emulate (among them NRIP save); drop them
# explicitly so the guest sees exactly what it gets, and QEMU stays quiet.
cpu=EPYC,+svm,+npt,-nrip-save,-fxsr-opt,-misalignsse,-osvw,-topoext,-xsavec
# One TCG thread for both CPUs (they still interleave, take IPIs and
# migrate vCPU threads). With multi-threaded TCG, QEMU's SVM emulation
# corrupts guest state around VMRUN/#VMEXIT: the 16-vCPU fault test fails
# a few runs in 100 on rkvm and on stock kvm_amd alike (2 and 4 of 100 in
# one boot), never with one thread. See testing.rst, "Multi-threaded TCG".
# RKVM_QEMU_ACCEL overrides it (e.g. "tcg" to look at that again).
args=(-accel "${RKVM_QEMU_ACCEL:-tcg,thread=single}" -cpu "$cpu" -smp 2 -m "$mem" -no-reboot -nodefaults
	-display none -kernel "$kernel" -initrd "$initrd"
	-append "console=ttyS0,115200 panic=-1 oops=panic loglevel=4 $append")
[ "$icount" = 1 ] && args+=(-icount shift=0,sleep=off)

rm -f "$log"
if [ "$interactive" = 1 ]; then
	exec qemu-system-x86_64 "${args[@]}" \
		-chardev stdio,id=con,logfile="$log",signal=off -serial chardev:con
fi
rc=0
timeout -k 5 "$timeout" qemu-system-x86_64 "${args[@]}" \
	-chardev file,id=con,path="$log" -serial chardev:con -monitor none </dev/null || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	echo "run-qemu: timeout after $timeout s" >&2
	exit 124
fi
exit "$rc"
