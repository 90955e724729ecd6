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
# debugging. RKVM_BENCH_ONLY="A B ..." runs only those workloads (rkvm-bench
# --only names: pageout, invalidate, get_dirty_log and apic_timer give two
# rows each) in
# every boot and lists only their rows, for a quicker run while working on
# one. Serial logs: out/bench/.
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
# first-touch faults is 16384 faults. The pageout workload writes, pages
# out and reads back 32 MiB (about 4 s of the instruction-counted boot per
# run on kvm_amd), the invalidate workload rewrites 16 MiB 2 x 32 times (a
# second). With kvm_amd the instruction-counted boot is the slower one,
# about 1.5 min of wall time on this project's machines. The dirty passes
# run in one VM per workload (the runs are groups of passes): its fault-in
# pass, about 40k instructions a page, costs more than the 3 x 4 timed
# passes at 6-7k, so 16 MiB (dirty_pass_ring's ring then has 8192 entries,
# room for a pass); get_dirty_log's and clear_dirty_log's 1 GiB slot has one
# page in 256 dirty (a call of kvm_amd takes some 20k instructions per
# bitmap word with a dirty bit). About 10 s per hypervisor in a boot.
# The interrupt round trips take some 150k instructions each under the
# test kernel, and the timers run for their period times their number (a
# soaker fills the CPU meanwhile): about 20 s per hypervisor in a boot.
bench_args=${RKVM_BENCH_ARGS:---pio 10000 --cpuid 10000 --fault-mib 64 --pageout-mib 32 --invalidate-mib 16 --invalidate-passes 32 --dirty-mib 16 --dirty-passes 4 --dirty-log-mib 1024 --dirty-log-stride 256 --dirty-log-calls 4 --ipi 2000 --timer 1000 --timer-period-us 500 --doorbell 2000 --repeat 3 --timeout 120}
# Bochs runs some 30 million instructions a second here: its boot takes
# about 70 s, kvm_intel's runs at these sizes one more minute (each run of
# its fault workloads is about 3.4 s of emulated time) and rkvm's 45 s.
# An interrupt there costs about 50k ticks, so the timer's period is 1 ms
# (half of it left to the soaker).
# A pageout run costs about 280k instructions per page, so 4 MiB there,
# and the dirty passes 4 MiB, get_dirty_log's and clear_dirty_log's slot
# 256 MiB.
# rkvm-bench's --timeout counts emulated seconds, about 3.5 s of wall time
# each in a busy guest.
vmx_args=${RKVM_BENCH_VMX_ARGS:---pio 5000 --cpuid 5000 --fault-mib 32 --pageout-mib 4 --invalidate-mib 8 --invalidate-passes 32 --dirty-mib 4 --dirty-passes 4 --dirty-log-mib 256 --dirty-log-stride 256 --dirty-log-calls 4 --ipi 1000 --timer 300 --timer-period-us 1000 --doorbell 1000 --repeat 3 --timeout 60}
# Not in the QEMU wall-time boot: without -icount, single-threaded TCG runs
# one CPU until it halts or is kicked (every 100 ms), so the host thread of
# the invalidate workload runs in bursts, or not at all while the guest
# rewrites its region (its wall figures said nothing about the hypervisor).
wall_skip="--skip invalidate"

workloads="pio_exit cpuid_exit fault_4k fault_4k_4vcpu fault_thp pageout pageout_fault_in
	invalidate_pass invalidate dirty_pass dirty_pass_4vcpu dirty_pass_ring get_dirty_log
	get_dirty_log_empty clear_dirty_log ipi_round_trip apic_timer apic_timer_deadline
	ioeventfd_doorbell"
# What /init also runs on rkvm loaded with fast_page_fault=0 (the locked
# write-protection fault path), in the same boot.
locked_workloads="dirty_pass dirty_pass_4vcpu"
# RKVM_BENCH_ONLY: rkvm-bench's --only in every boot, and the rows it selects.
if [ -n "${RKVM_BENCH_ONLY:-}" ]; then
	# selects W: the --only name that selects row W
	selects() {
		case $1 in
		pageout_fault_in) echo pageout ;;
		invalidate_pass) echo invalidate ;;
		get_dirty_log_empty) echo get_dirty_log ;;
		apic_timer_deadline) echo apic_timer ;;
		*) echo "$1" ;;
		esac
	}
	for w in $RKVM_BENCH_ONLY; do
		[[ " $(echo $workloads) " == *" $w "* ]] || die "RKVM_BENCH_ONLY: unknown workload '$w'"
		[ "$(selects $w)" = "$w" ] || die "RKVM_BENCH_ONLY: '$w' comes with '$(selects $w)', name that"
	done
	only=" $RKVM_BENCH_ONLY "
	kept= kept_locked=
	for w in $workloads; do
		[[ "$only" != *" $(selects $w) "* ]] || kept="$kept $w"
	done
	for w in $locked_workloads; do
		[[ "$only" != *" $w "* ]] || kept_locked="$kept_locked $w"
	done
	workloads=$kept locked_workloads=$kept_locked
	only_args="--only $(echo $RKVM_BENCH_ONLY | tr ' ' ,)"
	bench_args="$bench_args $only_args" vmx_args="$vmx_args $only_args"
fi

out="$RKVM_OUT/bench"
"$RKVM_TOOLS/setup.sh"
kdir=$(test_kernel_dir)		# the cached test kernel, or RKVM_KDIR
"$RKVM_TOOLS/build-module.sh"
"$RKVM_TOOLS/build-selftests.sh"
rm -rf "$out" && mkdir -p "$out"
"$RKVM_TOOLS/mkinitramfs.sh" "$out/initramfs.cpio.gz"

# The kernel command line carries the options with '+' for spaces.
# boot NAME "MORE-ARGS" [run-qemu.sh options]: one bench boot with
# rkvm-bench $bench_args MORE-ARGS, log in $out/NAME.log
boot() {
	local name=$1 append rc=0 t0=$SECONDS
	append="rkvm.mode=bench rkvm.bench_args=$(echo $bench_args $2 | tr ' ' +)"
	shift 2
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
# tsc LOG TAG WORKLOAD: the TSC figure, the guest's or (pageout, timed by
# the VMM) the host's.
tsc() {
	local v
	v=$(field "$1" "$2" "$3" guest_tsc_per_iter)
	[ -n "$v" ] || v=$(field "$1" "$2" "$3" host_tsc_per_iter)
	echo "$v"
}
# skipped TAG WORKLOAD LOG...: why rkvm-bench skipped a workload ("" if it
# did not), e.g. pageout without swap.
skipped() {
	local tag=$1 w=$2
	shift 2
	sed -n "s/^\[$tag\] bench $w skipped reason=\"\([^\"]*\)\".*/\1/p" "$@" | head -1
}
# reason TAG LOG...: why a hypervisor's run failed, from these boots ("" if none).
reason() {
	local tag=$1 r
	shift
	r=$(sed -n "s/^\[$tag\] \(bench [^ ]* failed\|bench-error\) reason=\"\([^\"]*\)\".*/\2/p" \
		"$@" | head -1)
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

status=0 bochs_retried=

# What one iteration is, under a table.
units() {
	echo "per iteration: an exit (pio_exit, cpuid_exit) or a 4 KiB page (fault_*: written"
	echo "first; pageout: paged out by the VMM, its own TSC; pageout_fault_in: read back"
	echo "from swap by the guest), a guest pass over the THP-backed region while the host"
	echo "invalidates one 2 MiB chunk per pass (invalidate_pass), what one invalidation adds"
	echo "to the guest's passes (invalidate; QEMU: instructions of both CPUs, Bochs: the"
	echo "guest CPU's ticks, the host thread's CPU running alongside), a guest pass"
	echo "rewriting a dirty-logging slot, one write per 4 KiB page, the VMM taking the log"
	echo "between passes (dirty_pass*: every write a write-protection fault; the log calls"
	echo "not counted; dirty_pass_ring: the dirty ring harvested and reset instead), or a"
	echo "KVM_GET_DIRTY_LOG call, the VMM's TSC, on a slot the guest dirtied one page in"
	echo "--dirty-log-stride of, or right after that with nothing dirty (get_dirty_log*), or"
	echo "with manual protection the KVM_CLEAR_DIRTY_LOG of that slot after such a call"
	echo "(clear_dirty_log), or, with the split irqchip, a round trip of interrupts to a"
	echo "halted vCPU: an IPI to another vCPU answered by an IPI back (ipi_round_trip), a"
	echo "doorbell ioeventfd answered by a host thread through an irqfd's MSI"
	echo "(ioeventfd_doorbell), or one APIC timer interrupt, periodic or TSC deadline, to a"
	echo "halted vCPU (apic_timer*: the host CPU time it took, its CPU's TSC as the VMM"
	echo "measures it; the wall column the same time in ns)"
}
# notes LOG...: after a table, the workloads skipped (with why), what
# pageout left resident, how many invalidations there were and whether
# the dirty ring filled up within a pass; sets status if rkvm left more
# resident than 2% and than KVM (pages it keeps pinned cannot be swapped).
notes() {
	local log=$1 w r tag kr rr
	shift
	for w in $workloads; do
		for tag in bench-kvm bench-rkvm; do
			r=$(skipped $tag $w "$@")
			[ -z "$r" ] || echo "$w: skipped on ${tag#bench-} ($r)"
		done
	done
	kr=$(field "$log" bench-kvm pageout resident_pct)
	rr=$(field "$log" bench-rkvm pageout resident_pct)
	if [ -n "$kr$rr" ]; then
		echo "pageout left resident (worst run, /proc/self/pagemap): KVM ${kr:--}%, rkvm ${rr:--}%"
		if [ -n "$rr" ] && awk -v r="$rr" -v k="${kr:-0}" 'BEGIN { exit !(r > 2 && r > k) }'; then
			echo "rkvm: pageout left ${rr}% of the guest's memory resident (KVM ${kr:--}%, 2% at most expected)"
			status=1
		fi
	fi
	r=$(field "$log" bench-rkvm invalidate iterations)
	[ -z "$r" ] || echo "invalidate: $r invalidations in $(field "$log" bench-rkvm \
		invalidate_pass iterations) passes over $(field "$log" bench-rkvm invalidate_pass \
		region_mib) MiB; passes without them: KVM $(field "$log" bench-kvm invalidate_pass \
		quiet_tsc_per_pass), rkvm $(field "$log" bench-rkvm invalidate_pass quiet_tsc_per_pass)"
	kr=$(field "$log" bench-kvm dirty_pass_ring ring_full_exits)
	rr=$(field "$log" bench-rkvm dirty_pass_ring ring_full_exits)
	r=$(field "$log" bench-kvm dirty_pass_ring ring_entries)
	[ -n "$r" ] || r=$(field "$log" bench-rkvm dirty_pass_ring ring_entries)
	[ "${kr:-0}${rr:-0}" = 00 ] || echo "dirty_pass_ring: KVM_EXIT_DIRTY_RING_FULL exits" \
		"in its passes (ring of $r entries): KVM ${kr:--}, rkvm ${rr:--}"
}

# fast_table WALL_LOG ICOUNT_LOG: rkvm's dirty passes with the lockless fast
# page fault (the default) and with fast_page_fault=0, from the same boots:
# locked/fast is the speed-up. Figures from the instruction-counted boot,
# and from the wall-time one if given. Sets status if figures are missing.
fast_table() {
	local wall=$1 icount=$2 w locked_i fast_i locked_w fast_w r missing_locked=0
	[ -n "$locked_workloads" ] || return 0	# RKVM_BENCH_ONLY left none
	echo
	echo "rkvm's lockless fast page fault: dirty passes with fast_page_fault=1 (default,"
	echo "fast) and =0 (the locked path), rkvm reloaded in the same boot"
	echo
	if [ -n "$wall" ]; then
		printf '%-20s %-38s   %-38s\n' "" "  instructions (-icount, exact)" "  wall ns (noisy)"
		printf '%-20s %12s %12s %12s   %12s %12s %12s\n' workload locked fast locked/fast \
			locked fast locked/fast
	else
		printf '%-20s %s\n' "" "  instructions (Bochs TSC)"
		printf '%-20s %12s %12s %12s\n' workload locked fast locked/fast
	fi
	for w in $locked_workloads; do
		locked_i=$(tsc "$icount" bench-rkvm-locked $w)
		fast_i=$(tsc "$icount" bench-rkvm $w)
		if [ -n "$wall" ]; then
			locked_w=$(field "$wall" bench-rkvm-locked $w wall_ns_per_iter)
			fast_w=$(field "$wall" bench-rkvm $w wall_ns_per_iter)
			[ -n "$locked_i" ] && [ -n "$locked_w" ] ||
				[ -n "$(skipped bench-rkvm-locked $w "$icount" "$wall")" ] || missing_locked=1
			printf '%-20s %12s %12s %12s   %12s %12s %12s\n' $w "${locked_i:--}" \
				"${fast_i:--}" "$(ratio "$locked_i" "$fast_i")" "${locked_w:--}" \
				"${fast_w:--}" "$(ratio "$locked_w" "$fast_w")"
		else
			[ -n "$locked_i" ] || [ -n "$(skipped bench-rkvm-locked $w "$icount")" ] ||
				missing_locked=1
			printf '%-20s %12s %12s %12s\n' $w "${locked_i:--}" "${fast_i:--}" \
				"$(ratio "$locked_i" "$fast_i")"
		fi
	done
	echo
	for w in $locked_workloads; do
		r=$(skipped bench-rkvm-locked $w "$icount" $wall)
		[ -z "$r" ] || echo "$w: skipped on rkvm fast_page_fault=0 ($r)"
	done
	if [ "$missing_locked" = 1 ]; then
		r=$(reason bench-rkvm-locked "$icount" $wall)
		echo "rkvm fast_page_fault=0: failed (${r:-no result, see the serial logs in $out})"
		status=1
	fi
}

qemu_table() {
	missing_kvm=0 missing_rkvm=0
	echo
	echo "rkvm bench: the same workloads on stock KVM (kvm_amd, npt=1) and on rkvm,"
	echo "emulated AMD host (QEMU TCG, SVM + NPT, 2 CPUs)"
	echo "rkvm-bench $bench_args"
	echo
	printf '%-20s %-35s   %-35s\n' "" "  instructions (-icount, exact)" "  wall ns (noisy)"
	printf '%-20s %12s %12s %9s   %12s %12s %9s\n' workload KVM rkvm rkvm/KVM KVM rkvm rkvm/KVM
	for w in $workloads; do
		ki=$(tsc "$out/icount.txt" bench-kvm $w)
		ri=$(tsc "$out/icount.txt" bench-rkvm $w)
		case $w in
		invalidate*)	# not in the wall boot ($wall_skip)
			kw=n/a rw=n/a wr=n/a ;;
		*)
			kw=$(field "$out/wall.txt" bench-kvm $w wall_ns_per_iter)
			rw=$(field "$out/wall.txt" bench-rkvm $w wall_ns_per_iter)
			wr=$(ratio "$rw" "$kw") ;;
		esac
		[ -n "$ki" ] && [ -n "$kw" ] ||
			[ -n "$(skipped bench-kvm $w "$out/icount.txt" "$out/wall.txt")" ] || missing_kvm=1
		[ -n "$ri" ] && [ -n "$rw" ] ||
			[ -n "$(skipped bench-rkvm $w "$out/icount.txt" "$out/wall.txt")" ] || missing_rkvm=1
		printf '%-20s %12s %12s %9s   %12s %12s %9s\n' $w "${ki:--}" "${ri:--}" "$(ratio "$ri" "$ki")" \
			"${kw:--}" "${rw:--}" "$wr"
	done
	echo
	units
	notes "$out/icount.txt" "$out/icount.txt" "$out/wall.txt"
	failures "$out/wall.log and icount.log" "$out/icount.txt" "$out/wall.txt"
	fast_table "$out/wall.txt" "$out/icount.txt"
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
	echo "emulated Intel host (Bochs, Haswell, VMX + EPT, 2 CPUs)"
	echo "rkvm-bench $vmx_args; the Bochs boot took $bochs_secs s$bochs_retried"
	echo
	printf '%-20s %s\n' "" "  instructions (Bochs TSC)"
	printf '%-20s %12s %12s %9s\n' workload KVM rkvm rkvm/KVM
	for w in $workloads; do
		kb=$(tsc "$out/bochs.txt" bench-kvm $w)
		rb=$(tsc "$out/bochs.txt" bench-rkvm $w)
		[ -n "$kb" ] || [ -n "$(skipped bench-kvm $w "$out/bochs.txt")" ] || missing_kvm=1
		[ -n "$rb" ] || [ -n "$(skipped bench-rkvm $w "$out/bochs.txt")" ] || missing_rkvm=1
		printf '%-20s %12s %12s %9s\n' $w "${kb:--}" "${rb:--}" "$(ratio "$rb" "$kb")"
	done
	echo
	units
	notes "$out/bochs.txt" "$out/bochs.txt"
	failures "$out/bochs.log" "$out/bochs.txt"
	fast_table "" "$out/bochs.txt"
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

# The QEMU boot (tools/rkvm/qemu-boot): unmodified QEMU boots the guest to
# its marker on kvm_amd and then on rkvm, in one boot of the emulated AMD
# host (rkvm.qemu_dev=both). Twice: once as make check runs it (wall time
# of the emulated host, noisy), once under -icount, where the emulated
# host's clock counts the instructions its CPUs ran (the one-vCPU cases:
# there the two-vCPU guests stall on kvm_amd, whose interrupts QEMU TCG's
# SVM delivers twice; rkvm forces the exit that prevents it; testing.rst). Each figure is QEMU's whole run, firmware and power-off
# included, and the guest's own uptime at its /init. RKVM_BENCH_QEMU_BOOT=0
# leaves it out.
qemu_boot_bench() {
	local kind cases opt c k r
	qemu_boot_initramfs "$out" || die "QEMU boot test initramfs build failed"
	for kind in wall icount; do
		cases=pc-1vcpu,pc-2vcpu,microvm-1vcpu,microvm-2vcpu opt=
		[ $kind = icount ] && cases=pc-1vcpu,microvm-1vcpu opt=--icount
		note "bench boot 'qemu-boot-$kind'"
		"$RKVM_TOOLS/run-qemu.sh" $opt --kernel "$kdir/build/arch/x86/boot/bzImage" \
			--initrd "$out/initramfs-qemu-boot.cpio.gz" --log "$out/qemu-boot-$kind.log" \
			--timeout 1500 --append "rkvm.mode=qemu-boot rkvm.qemu_dev=both rkvm.qemu_cases=$cases rkvm.qemu_timeout=150" ||
			echo "boot qemu-boot-$kind: run-qemu.sh exit $?" >> "$out/problems"
		tr -d '\r' < "$out/qemu-boot-$kind.log" > "$out/qemu-boot-$kind.txt"
	done
	echo
	echo "QEMU 10 boots the test kernel to its marker (tools/rkvm/qemu-boot), on stock"
	echo "KVM (kvm_amd, npt=1) and on rkvm, emulated AMD host: seconds of QEMU's whole"
	echo "run / the guest's uptime at its /init, by the emulated host's clock"
	echo
	printf '%-16s %-34s   %-34s
' "" "  -icount (instructions, exact)" "  wall (noisy)"
	printf '%-16s %12s %12s %8s   %12s %12s %8s
' case KVM rkvm rkvm/KVM KVM rkvm rkvm/KVM
	for c in pc-1vcpu pc-2vcpu microvm-1vcpu microvm-2vcpu; do
		printf '%-16s' $c
		for kind in icount wall; do
			k=$(boot_secs "$out/qemu-boot-$kind.txt" qemu-boot-kvm $c)
			r=$(boot_secs "$out/qemu-boot-$kind.txt" qemu-boot $c)
			[ $kind = wall ] && printf '  '
			printf ' %12s %12s %8s' "${k:--}" "${r:--}" "$(ratio "${r%%/*}" "${k%%/*}")"
		done
		echo
	done
	echo
	# A boot that failed shows as "-" and is listed; the host's kernel
	# reports fail the run (the guests' own, in "# " lines, the runner
	# judged).
	for kind in icount wall; do
		grep -E '^\[qemu-boot(-kvm)?\] not ok' "$out/qemu-boot-$kind.txt" |
			sed "s/^/$kind: failed boot: /"
		if grep -vE '^\[qemu-boot(-kvm)?\] #' "$out/qemu-boot-$kind.txt" | grep -qE "$SPLATS"; then
			echo "kernel reports in the 'qemu-boot-$kind' boot's serial log ($out)"
			status=1
		fi
	done
}
# boot_secs LOG SUITE CASE: "S/U", QEMU's seconds and the guest's uptime at
# /init, of a boot that passed; nothing otherwise.
boot_secs() {
	grep -q "^\[$2\] ok [0-9]* qemu-boot-$3\$" "$1" || return 0
	sed -n "s/^\[$2\] # qemu-boot-$3: exit 0 after \([0-9.]*\) s; guest said: .*up \([0-9.]*\) s.*/\1\/\2/p" "$1" | head -1
}

# Bochs runs alone, after QEMU (as in check.sh).
if on qemu; then
	boot wall "$wall_skip"
	boot icount "" --icount
	qemu_table
	splats wall icount
	[ "${RKVM_BENCH_QEMU_BOOT:-1}" = 0 ] || [ -n "${RKVM_BENCH_ONLY:-}" ] || qemu_boot_bench
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
