#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the second initramfs of the QEMU boot test (tools/rkvm/qemu-boot.sh):
# the machine's own QEMU (qemu-system-x86_64 from bookworm-backports, as
# setup.sh installs it) with its shared libraries and the firmware its
# pc and microvm machines load, and the runner (run). The guest kernel and
# its tiny initramfs (guest-init.c) are the host initramfs's
# (/usr/lib/rkvm/linux-guest, from tools/rkvm/mkinitramfs.sh), which stays
# as it is: the kernel unpacks this one over it when the two are
# concatenated into one initrd.
# Usage: mkinitramfs.sh OUTPUT.cpio.gz
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

[ $# = 1 ] || die "usage: $0 OUTPUT.cpio.gz"
kdir=$(test_kernel_dir)
here="$RKVM_TOOLS/qemu-boot"
qemu=/usr/bin/qemu-system-x86_64
[ -x "$qemu" ] || die "$qemu is missing; run tools/rkvm/setup.sh"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# What QEMU loads, by path in the emulated host: itself, the libraries
# the dynamic loader resolves for it here, and the firmware of the
# machines the runner boots (found by tracing QEMU's opens): SeaBIOS with
# the option ROMs QEMU's pc machine adds for -kernel (linuxboot_dma.bin)
# and the TPR-patching vapic ROM (kvmvapic.bin); qboot for microvm.
# -nodefaults leaves out the VGA and network ROMs.
files=("$qemu:$qemu")
while read -r lib; do
	files+=("$lib:$(readlink -f "$lib")")
done < <(ldd "$qemu" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
for fw in /usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin \
	/usr/share/qemu/kvmvapic.bin /usr/share/qemu/qboot.rom; do
	[ -f "$fw" ] || die "$fw is missing (packages seabios, qemu-system-data)"
	files+=("$fw:$fw")
done
files+=("/usr/lib/rkvm/qemu-boot/run:$here/run")

{
	# Every parent directory first (those the host's initramfs has too
	# are made again harmlessly).
	for f in "${files[@]}"; do
		d=${f%%:*}
		while d=${d%/*}; [ -n "$d" ]; do echo "$d"; done
	done | sort -u | sed 's/.*/dir & 0755 0 0/'
	for f in "${files[@]}"; do
		mode=0644
		[ -x "${f#*:}" ] && mode=0755
		echo "file ${f%%:*} ${f#*:} $mode 0 0"
	done
} > "$stage/list"

"$kdir/build/usr/gen_init_cpio" "$stage/list" | gzip -1 > "$1.tmp"
mv "$1.tmp" "$1"
note "QEMU boot test initramfs $1 ($(du -h "$1" | cut -f1): $("$qemu" --version | head -1))"
