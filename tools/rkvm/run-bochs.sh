#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots a kernel + initramfs in Bochs (an Intel CPU with VMX and EPT, which
# this host lacks) headless, with the serial console in a file and a hard
# timeout, so CI never hangs:
#
#   run-bochs.sh --kernel BZIMAGE --initrd INITRD_CPIO_GZ --log SERIAL_LOG \
#                --timeout SECONDS [--append "EXTRA CMDLINE"] [--workdir DIR]
#
# The guest's /init prints "rkvm-init: done" and then runs `poweroff -f`.
# Exit 0 once that line is on the serial console, 124 (after killing Bochs) if
# it is not there within SECONDS, 1 if Bochs dies before it.
#
# Traps with Debian's Bochs 2.7, which this config avoids:
#  - without "sound: driver=dummy" Bochs aborts at start-up;
#  - other CPU models (skylake_x, icelake_u) crash Linux; two cores in one
#    package (count=1:2:1) is fine, two packages (count=2) gives a WARNING;
#  - rfb with timeout=0 is the only headless display. It binds 0.0.0.0, taking
#    the first free port in 5900-5949 (no option to choose it), so parallel
#    runs do not collide; we run Bochs in a private network namespace when we
#    can, so that the port is not reachable from outside;
#  - the debugger is built in: "-rc" feeds it a "c" (continue) and stdin is
#    /dev/null, so it never waits for a terminal.
# Bochs exits by itself on ACPI soft power off; we still stop it ourselves
# (after a short grace) once the marker is seen, in case the guest does not.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { die "usage: $0 --kernel BZIMAGE --initrd INITRD --log SERIAL_LOG --timeout SECONDS [--append CMDLINE] [--workdir DIR]"; }

kernel= initrd= log= timeout= append= workdir=
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case "$1" in
	--kernel) kernel=$2 ;;
	--initrd) initrd=$2 ;;
	--log) log=$2 ;;
	--timeout) timeout=$2 ;;
	--append) append=$2 ;;
	--workdir) workdir=$2 ;;
	*) usage ;;
	esac
	shift 2
done
[ -n "$kernel" ] && [ -n "$initrd" ] && [ -n "$log" ] && [ -n "$timeout" ] || usage
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a positive number of seconds"
[[ "$append" != *$'\n'* ]] || die "--append must be a single line"
[ -f "$kernel" ] || die "no kernel at $kernel"
[ -f "$initrd" ] || die "no initrd at $initrd"
for tool in bochs xorriso; do
	command -v "$tool" >/dev/null || die "$tool is not installed (tools/rkvm/setup.sh)"
done
isolinux=/usr/lib/ISOLINUX/isolinux.bin
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
[ -f "$isolinux" ] && [ -f "$ldlinux" ] || die "isolinux/syslinux-common are not installed"
log=$(realpath -m "$log")
rm -f "$log"

if [ -n "$workdir" ]; then
	mkdir -p "$workdir"
	tmp=
else
	workdir=$(mktemp -d "${TMPDIR:-/tmp}/rkvm-bochs.XXXXXX")
	tmp=$workdir
fi
workdir=$(realpath "$workdir")

pid=
cleanup() {
	if [ -n "$pid" ]; then
		# The group, and the pid itself in case setsid has not run yet.
		kill -TERM -- "-$pid" "$pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL -- "-$pid" "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
	if [ -f "$workdir/serial.log" ]; then
		mkdir -p "$(dirname "$log")"
		cp "$workdir/serial.log" "$log"
	fi
	[ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A no-prompt isolinux CD: Bochs's BIOS boots it directly.
iso="$workdir/iso"
rm -rf "$iso" "$workdir/boot.iso" "$workdir/serial.log" "$workdir/bochs.log"
mkdir -p "$iso/isolinux"
cp "$isolinux" "$ldlinux" "$iso/isolinux/"
cp "$kernel" "$iso/vmlinuz"
cp "$initrd" "$iso/initrd.gz"
cat > "$iso/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT rkvm
PROMPT 0
TIMEOUT 0
LABEL rkvm
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 panic=-1 oops=panic $append
EOF
xorriso -as mkisofs -quiet -o "$workdir/boot.iso" -b isolinux/isolinux.bin \
	-c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
	"$iso" 2>"$workdir/xorriso.log" || { cat "$workdir/xorriso.log" >&2; die "xorriso failed"; }

cat > "$workdir/bochsrc" <<EOF
cpu: model=corei7_haswell_4770, count=1:2:1, ips=100000000
megs: 2048
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path=boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=serial.log
display_library: rfb, options="timeout=0"
sound: driver=dummy
speaker: enabled=0
log: bochs.log
error: action=ignore
info: action=ignore
panic: action=fatal
EOF
echo c > "$workdir/rc.txt"

# setsid: Bochs leads its own process group, which cleanup kills as a whole.
netns=()
if unshare --net true 2>/dev/null; then
	netns=(unshare --net)
fi
marker='rkvm-init: done'
# Milliseconds; EPOCHREALTIME's separator follows the locale.
now_ms() { local t=${EPOCHREALTIME//[^0-9]/}; echo $((10#$t / 1000)); }
start=$(now_ms)
(cd "$workdir" && exec setsid "${netns[@]}" bochs -q -f bochsrc -rc rc.txt \
	</dev/null >bochs.out 2>&1) &
pid=$!

done_at=
while :; do
	now=$(now_ms)
	if [ -z "$done_at" ] && grep -qF "$marker" "$workdir/serial.log" 2>/dev/null; then
		done_at=$now
		note "guest done after $(((now - start) / 1000)) s"
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null || true
		pid=
		# The marker may have landed between the check above and the exit.
		grep -qF "$marker" "$workdir/serial.log" 2>/dev/null && exit 0
		# bochs.log only holds panics (info/error are ignored); if it is
		# empty, Bochs's own output says more.
		out="$workdir/bochs.log"
		[ -s "$out" ] || out="$workdir/bochs.out"
		echo "run-bochs: bochs exited before '$marker'; last lines of ${out##*/}:" >&2
		tail -n 20 "$out" >&2 || true
		exit 1
	fi
	# Grace for the guest's own poweroff, then stop Bochs ourselves.
	if [ -n "$done_at" ] && [ $((now - done_at)) -ge 2000 ]; then
		exit 0
	fi
	if [ -z "$done_at" ] && [ $((now - start)) -ge $((timeout * 1000)) ]; then
		echo "run-bochs: timeout after $timeout s" >&2
		exit 124
	fi
	sleep 0.5
done
