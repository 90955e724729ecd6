#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the test host's initramfs: busybox, /init, rkvm.ko, the stock KVM
# modules (the baseline) and the selftests. Usage: mkinitramfs.sh OUTPUT.cpio.gz
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# = 1 ] || die "usage: $0 OUTPUT.cpio.gz"
kdir=$(test_kernel_dir)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

make -s -C "$kdir/src" O="$kdir/build" "${KMAKE_VARS[@]}" \
	INSTALL_MOD_PATH="$stage/root" modules_install >/dev/null
kver=$(cat "$kdir/build/include/config/kernel.release")

{
	echo "dir /dev 0755 0 0"
	echo "nod /dev/console 0600 0 0 c 5 1"
	for d in /bin /sbin /proc /sys /tmp /lib /lib/rkvm /usr /usr/lib /usr/lib/rkvm \
		/usr/lib/rkvm/selftests /root; do
		echo "dir $d 0755 0 0"
	done
	echo "file /init $RKVM_TOOLS/guest/init 0755 0 0"
	echo "file /bin/busybox /bin/busybox 0755 0 0"
	echo "slink /bin/sh busybox 0777 0 0"
	echo "file /lib/rkvm/rkvm.ko $RKVM_TOP/rkvm.ko 0644 0 0"
	for f in "$RKVM_OUT"/selftests/*; do
		echo "file /usr/lib/rkvm/selftests/${f##*/} $f 0755 0 0"
	done
	(cd "$stage/root" && find lib/modules -type d -printf 'dir /%p 0755 0 0\n' &&
		find lib/modules -type f -printf "file /%p $stage/root/%p 0644 0 0\n")
} > "$stage/list"

"$kdir/build/usr/gen_init_cpio" "$stage/list" | gzip -1 > "$1.tmp"
mv "$1.tmp" "$1"
note "initramfs $1 (kernel $kver)"
