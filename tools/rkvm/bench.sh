#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: runs rkvm-bench on stock KVM (kvm_amd, npt=1) and then on rkvm
# in one boot of the emulated AMD host (QEMU TCG, SVM + NPT), twice: once
# as is for wall time, once under -icount shift=0,sleep=off, where the guest
# TSC counts instructions (deterministic). Prints a table of both figures and
# the ratios rkvm/KVM. Exits non-zero if any figure is missing (rkvm cannot
# run the workload yet, a boot timed out, ...) or a kernel report shows up.
#
# RKVM_BENCH_ARGS overrides the workload sizes (rkvm-bench options, e.g.
# "--pio 2000 --cpuid 2000 --fault-mib 16"); RKVM_KDIR boots another kernel
# build (see lib.sh), e.g. one without the test kernel's lock debugging.
# Serial logs: out/bench/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# 10000 exits take well under a second of wall time each way; 64 MiB of
# first-touch faults is 16384 faults. With kvm_amd the instruction-counted
# boot is the slower one, about 1.5 min of wall time on this project's
# machines.
bench_args=${RKVM_BENCH_ARGS:---pio 10000 --cpuid 10000 --fault-mib 64 --repeat 3 --timeout 120}

out="$RKVM_OUT/bench"
"$RKVM_TOOLS/setup.sh"
kdir=$(test_kernel_dir)		# the cached test kernel, or RKVM_KDIR
"$RKVM_TOOLS/build-module.sh"
"$RKVM_TOOLS/build-selftests.sh"
rm -rf "$out" && mkdir -p "$out"
"$RKVM_TOOLS/mkinitramfs.sh" "$out/initramfs.cpio.gz"

# The kernel command line carries the options with '+' for spaces.
append="rkvm.mode=bench rkvm.bench_args=$(echo $bench_args | tr ' ' +)"
boot() { # boot NAME [run-qemu.sh options]: one bench boot, log in $out/NAME.log
	local name=$1 rc=0 t0=$SECONDS
	shift
	note "bench boot '$name' ($*)"
	"$RKVM_TOOLS/run-qemu.sh" --kernel "$kdir/build/arch/x86/boot/bzImage" \
		--initrd "$out/initramfs.cpio.gz" --log "$out/$name.log" --timeout 600 \
		--append "$append" "$@" || rc=$?
	tr -d '\r' < "$out/$name.log" > "$out/$name.txt"
	note "bench boot '$name' finished in $((SECONDS - t0)) s (exit $rc)"
	[ "$rc" = 0 ] || echo "boot $name: run-qemu.sh exit $rc" >> "$out/problems"
}
boot wall
boot icount --icount

# field LOG TAG WORKLOAD FIELD: a value from a "[TAG] bench WORKLOAD k=v ..." line.
field() {
	awk -v t="[$2]" -v w="$3" -v f="$4=" '$1 == t && $2 == "bench" && $3 == w {
		for (i = 4; i <= NF; i++) if (index($i, f) == 1) { print substr($i, length(f) + 1); exit } }' "$1"
}
# reason TAG: why a hypervisor's run failed, from either boot ("" if none).
reason() {
	local r
	r=$(sed -n "s/^\[$1\] .*reason=\"\([^\"]*\)\".*/\1/p" "$out/icount.txt" "$out/wall.txt" | head -1)
	[ -n "$r" ] || r=$(sed -n "s/^\[$1\] exit=\([1-9][0-9]*\)/rkvm-bench exit status \1/p" \
		"$out/icount.txt" "$out/wall.txt" | head -1)
	echo "$r"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else printf "-" }'; }

workloads="pio_exit cpuid_exit fault_4k fault_4k_4vcpu"
missing_kvm=0 missing_rkvm=0
echo
echo "rkvm bench: the same workloads on stock KVM (kvm_amd, npt=1) and on rkvm,"
echo "emulated AMD host (QEMU TCG, SVM + NPT, 2 CPUs); per iteration (exit or 4 KiB fault)"
echo "rkvm-bench $bench_args"
echo
printf '%-16s %-35s   %-35s\n' "" "  instructions (-icount, exact)" "  wall ns (noisy)"
printf '%-16s %12s %12s %9s   %12s %12s %9s\n' workload KVM rkvm rkvm/KVM KVM rkvm rkvm/KVM
for w in $workloads; do
	ki=$(field "$out/icount.txt" bench-kvm $w guest_tsc_per_iter)
	ri=$(field "$out/icount.txt" bench-rkvm $w guest_tsc_per_iter)
	kw=$(field "$out/wall.txt" bench-kvm $w wall_ns_per_iter)
	rw=$(field "$out/wall.txt" bench-rkvm $w wall_ns_per_iter)
	[ -n "$ki" ] && [ -n "$kw" ] || missing_kvm=1
	[ -n "$ri" ] && [ -n "$rw" ] || missing_rkvm=1
	printf '%-16s %12s %12s %9s   %12s %12s %9s\n' $w "${ki:--}" "${ri:--}" "$(ratio "$ri" "$ki")" \
		"${kw:--}" "${rw:--}" "$(ratio "$rw" "$kw")"
done
echo

status=0
if [ "$missing_kvm" = 1 ]; then
	r=$(reason bench-kvm)
	echo "kvm: failed (${r:-no result, see $out/*.log})"
	status=1
fi
if [ "$missing_rkvm" = 1 ]; then
	r=$(reason bench-rkvm)
	echo "rkvm: failed (${r:-no result, see $out/*.log})"
	status=1
fi
SPLATS='WARNING:|BUG:|Oops|Kernel panic|KFENCE:|KASAN:|UBSAN:|general protection fault|possible recursive locking|circular locking dependency|inconsistent lock state|suspicious RCU usage|INFO: task .* blocked|rcu: INFO|unreferenced object|Call Trace:'
for name in wall icount; do
	if grep -qE "$SPLATS" "$out/$name.txt"; then
		echo "kernel reports in the '$name' boot's serial log:"
		grep -nE -A12 "$SPLATS" "$out/$name.txt" | head -40
		status=1
	fi
done
if [ -f "$out/problems" ]; then
	cat "$out/problems"
	status=1
fi
echo "serial logs in $out"
exit "$status"
