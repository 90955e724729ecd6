#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: runs rkvm-bench on stock KVM and then on rkvm, in one boot per
# figure, on both emulated hosts:
#  - the AMD host (QEMU TCG, SVM + NPT), kvm_amd npt=1 against rkvm, twice:
#    once as is for wall time, once under -icount shift=0,sleep=off, where
#    the guest TSC counts instructions (deterministic);
#  - then the Intel host (Bochs, VMX + EPT), kvm_intel ept=1 against rkvm,
#    once: Bochs' TSC counts instructions whatever the host does, and its
#    guest clocks follow it, so that boot gives the one (repeatable) figure.
# Prints a table per host of the figures and the ratios rkvm/KVM. Exits
# non-zero if any figure is missing (rkvm cannot run the workload yet, a
# boot timed out, ...) or a kernel report shows up.
#
# RKVM_BENCH_MACHINES picks the hosts ("qemu bochs" by default; "qemu" or
# "bochs" alone for a quicker run). RKVM_BENCH_ARGS overrides the workload
# sizes in QEMU (rkvm-bench options, e.g. "--pio 2000 --cpuid 2000
# --fault-mib 16"), RKVM_BENCH_VMX_ARGS those in Bochs; RKVM_KDIR boots
# another kernel build (see lib.sh), e.g. one without the test kernel's lock
# debugging. Serial logs: out/bench/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

machines=${RKVM_BENCH_MACHINES:-qemu bochs}
for m in $machines; do
	case $m in
	qemu|bochs) ;;
	*) die "RKVM_BENCH_MACHINES: unknown machine '$m' (qemu, bochs)" ;;
	esac
done
[ -n "${machines// /}" ] || die "RKVM_BENCH_MACHINES is empty (qemu, bochs)"
on() { [[ " $machines " == *" $1 "* ]]; }

# 10000 exits take well under a second of wall time each way; 64 MiB of
# first-touch faults is 16384 faults. With kvm_amd the instruction-counted
# boot is the slower one, about 1.5 min of wall time on this project's
# machines.
bench_args=${RKVM_BENCH_ARGS:---pio 10000 --cpuid 10000 --fault-mib 64 --repeat 3 --timeout 120}
# Bochs runs some 30 million instructions a second here: its boot takes
# about 70 s, kvm_intel's runs at these sizes one more minute (each run of
# its fault workloads is about 3.4 s of emulated time) and rkvm's 45 s.
# rkvm-bench's --timeout counts emulated seconds, about 3.5 s of wall time
# each in a busy guest.
vmx_args=${RKVM_BENCH_VMX_ARGS:---pio 5000 --cpuid 5000 --fault-mib 32 --repeat 3 --timeout 60}

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
# The Bochs boot, log in $out/bochs.log. As in check.sh: nohz=off (a CPU
# that never woke from tickless idle stalled Bochs runs), and a boot that
# times out (the guest stopped making progress) is retried once, saying so.
# 10 minutes is ample: the boot takes about 70 s, and a workload that hangs
# is given up after rkvm-bench's --timeout.
boot_bochs() {
	local rc attempt t0
	for attempt in 1 2; do
		rc=0 t0=$SECONDS
		note "bench boot 'bochs' (Bochs, VMX + EPT)"
		"$RKVM_TOOLS/run-bochs.sh" --kernel "$kdir/build/arch/x86/boot/bzImage" \
			--initrd "$out/initramfs.cpio.gz" --log "$out/bochs.log" --timeout 600 \
			--append "nohz=off rkvm.mode=bench rkvm.bench_args=$(echo $vmx_args | tr ' ' +)" || rc=$?
		[ "$rc" = 124 ] && [ "$attempt" = 1 ] || break
		[ ! -f "$out/bochs.log" ] || mv "$out/bochs.log" "$out/bochs.timed-out.log"
		note "bench boot 'bochs': the guest stalled (timeout, log in $out/bochs.timed-out.log); retrying once"
		bochs_retried=" (the first boot stalled and was retried: $out/bochs.timed-out.log)"
	done
	if [ -f "$out/bochs.log" ]; then
		tr -d '\r' < "$out/bochs.log" > "$out/bochs.txt"
	else
		: > "$out/bochs.txt"
	fi
	bochs_secs=$((SECONDS - t0))
	note "bench boot 'bochs' finished in $bochs_secs s (exit $rc)"
	[ "$rc" = 0 ] || echo "boot bochs: run-bochs.sh exit $rc" >> "$out/problems"
}

# field LOG TAG WORKLOAD FIELD: a value from a "[TAG] bench WORKLOAD k=v ..." line.
field() {
	awk -v t="[$2]" -v w="$3" -v f="$4=" '$1 == t && $2 == "bench" && $3 == w {
		for (i = 4; i <= NF; i++) if (index($i, f) == 1) { print substr($i, length(f) + 1); exit } }' "$1"
}
# reason TAG LOG...: why a hypervisor's run failed, from these boots ("" if none).
reason() {
	local tag=$1 r
	shift
	r=$(sed -n "s/^\[$tag\] .*reason=\"\([^\"]*\)\".*/\1/p" "$@" | head -1)
	[ -n "$r" ] || r=$(sed -n "s/^\[$tag\] exit=\([1-9][0-9]*\)/rkvm-bench exit status \1/p" \
		"$@" | head -1)
	echo "$r"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else printf "-" }'; }
# failures SEE LOG...: the "kvm: failed (...)" and "rkvm: failed (...)"
# lines after a table, for $missing_kvm and $missing_rkvm, with reasons
# from these boots (else "see SEE"); sets status.
failures() {
	local see=$1 r
	shift
	if [ "$missing_kvm" = 1 ]; then
		r=$(reason bench-kvm "$@")
		echo "kvm: failed (${r:-no result, see $see})"
		status=1
	fi
	if [ "$missing_rkvm" = 1 ]; then
		r=$(reason bench-rkvm "$@")
		echo "rkvm: failed (${r:-no result, see $see})"
		status=1
	fi
}

workloads="pio_exit cpuid_exit fault_4k fault_4k_4vcpu fault_thp"
status=0 bochs_retried=

qemu_table() {
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
	failures "$out/wall.log and icount.log" "$out/icount.txt" "$out/wall.txt"
}

# Bochs runs its CPUs in turns of a few instructions each and advances the
# TSC by one per instruction of a turn, so the ticks count what each CPU
# executes (a halted CPU's turns pass all the same), the CPUs in parallel.
# The guest's clocks follow the ticks: a wall figure would be the same count
# in other units. With two CPUs sharing the work, fault_4k_4vcpu takes fewer
# ticks per page than fault_4k, where under QEMU's one TCG thread the two
# CPUs' instructions add up.
bochs_table() {
	missing_kvm=0 missing_rkvm=0
	echo
	echo "rkvm bench: the same workloads on stock KVM (kvm_intel, ept=1) and on rkvm,"
	echo "emulated Intel host (Bochs, Haswell, VMX + EPT, 2 CPUs); per iteration (exit or 4 KiB fault)"
	echo "rkvm-bench $vmx_args; the Bochs boot took $bochs_secs s$bochs_retried"
	echo
	printf '%-16s %s\n' "" "  instructions (Bochs TSC)"
	printf '%-16s %12s %12s %9s\n' workload KVM rkvm rkvm/KVM
	for w in $workloads; do
		kb=$(field "$out/bochs.txt" bench-kvm $w guest_tsc_per_iter)
		rb=$(field "$out/bochs.txt" bench-rkvm $w guest_tsc_per_iter)
		[ -n "$kb" ] || missing_kvm=1
		[ -n "$rb" ] || missing_rkvm=1
		printf '%-16s %12s %12s %9s\n' $w "${kb:--}" "${rb:--}" "$(ratio "$rb" "$kb")"
	done
	echo
	failures "$out/bochs.log" "$out/bochs.txt"
}

SPLATS='WARNING:|BUG:|Oops|Kernel panic|KFENCE:|KASAN:|UBSAN:|general protection fault|possible recursive locking|circular locking dependency|inconsistent lock state|suspicious RCU usage|INFO: task .* blocked|rcu: INFO|unreferenced object|Call Trace:'
splats() { # splats NAME...: kernel reports in these boots' serial logs
	local name
	for name in "$@"; do
		if grep -qE "$SPLATS" "$out/$name.txt"; then
			echo "kernel reports in the '$name' boot's serial log:"
			grep -nE -A12 "$SPLATS" "$out/$name.txt" | head -40
			status=1
		fi
	done
}

# Bochs runs alone, after QEMU (as in check.sh).
if on qemu; then
	boot wall
	boot icount --icount
	qemu_table
	splats wall icount
fi
if on bochs; then
	boot_bochs
	bochs_table
	splats bochs
fi
if [ -f "$out/problems" ]; then
	cat "$out/problems"
	status=1
fi
echo "serial logs in $out"
exit "$status"
