#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the test host's initramfs: busybox, /init, rkvm.ko, the stock KVM
# modules (the baseline), the selftests, and the Linux guest that VMMs boot
# inside the host (rkvm-vmm, tools/rkvm/vmm; QEMU, tools/rkvm/qemu-boot):
# the test kernel's own bzImage and System.map, and a tiny initramfs whose
# /init (qemu-boot/guest-init.c, static) prints one marker line and leaves
# the machine. Usage: mkinitramfs.sh OUTPUT.cpio.gz
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# = 1 ] || die "usage: $0 OUTPUT.cpio.gz"
kdir=$(test_kernel_dir)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

make -s -C "$kdir/src" O="$kdir/build" "${KMAKE_VARS[@]}" \
	INSTALL_MOD_PATH="$stage/root" modules_install >/dev/null
kver=$(cat "$kdir/build/include/config/kernel.release")

# The Linux guest's initramfs: /init and the console it prints on.
gcc -static -O2 -Wall -Wextra -Werror -s -o "$stage/guest-init" "$RKVM_TOOLS/qemu-boot/guest-init.c"
cat > "$stage/guest.list" <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0755 0 0
file /init $stage/guest-init 0755 0 0
EOF
"$kdir/build/usr/gen_init_cpio" "$stage/guest.list" | gzip -9 > "$stage/guest.cpio.gz"

{
	echo "dir /dev 0755 0 0"
	echo "nod /dev/console 0600 0 0 c 5 1"
	for d in /bin /sbin /proc /sys /tmp /lib /lib/rkvm /usr /usr/lib /usr/lib/rkvm \
		/usr/lib/rkvm/selftests /usr/lib/rkvm/linux-guest /usr/lib/rkvm/vmm /root; do
		echo "dir $d 0755 0 0"
	done
	echo "file /usr/lib/rkvm/linux-guest/bzImage $kdir/build/arch/x86/boot/bzImage 0644 0 0"
	echo "file /usr/lib/rkvm/linux-guest/System.map $kdir/build/System.map 0644 0 0"
	echo "file /usr/lib/rkvm/linux-guest/initramfs.cpio.gz $stage/guest.cpio.gz 0644 0 0"
	echo "file /usr/lib/rkvm/vmm/run $RKVM_TOOLS/vmm/run 0755 0 0"
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
