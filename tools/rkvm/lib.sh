# SPDX-License-Identifier: GPL-2.0
# Shared settings for rkvm's host-side scripts. Source it; do not run it.

RKVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RKVM_TOOLS="$RKVM_TOP/tools/rkvm"
RKVM_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/rkvm"
RKVM_OUT="${RKVM_OUT:-$RKVM_TOP/out}"

# Debian's rustc 1.96 ships the library source the kernel needs; the rustup
# toolchain first on PATH does not, so it must never build kernel code.
export RUSTC=/usr/bin/rustc
export HOSTRUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export RUSTFMT=/usr/bin/rustfmt
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
export BINDGEN="$HOME/.cargo/bin/bindgen"
KMAKE_VARS=(ARCH=x86_64 LLVM=-19 "RUSTC=$RUSTC" "HOSTRUSTC=$HOSTRUSTC"
	"RUSTDOC=$RUSTDOC" "RUSTFMT=$RUSTFMT" "BINDGEN=$BINDGEN")

die() { echo "rkvm: error: $*" >&2; exit 1; }
note() { echo "rkvm: $*" >&2; }

# The kernel build is keyed by the kernel source package version plus the
# config fragment and patches, so that any change to them rebuilds.
kernel_key() {
	local ver
	ver=$(cat "$RKVM_CACHE/linux-source/VERSION" 2>/dev/null) || die "kernel source not downloaded; run tools/rkvm/setup.sh"
	{
		echo "$ver"
		cat "$RKVM_TOOLS/kernel/rkvm.config"
		cat "$RKVM_TOOLS/kernel/patches/"*.patch 2>/dev/null || true
		cat "$RKVM_TOOLS/build-kernel.sh"
	} | sha256sum | cut -c1-16
}

kernel_dir() { echo "$RKVM_CACHE/kernel/$(kernel_key)"; }

# The kernel build the module, selftests and initramfs are made for: the
# cached test kernel, or RKVM_KDIR (a directory with src/ and build/, e.g.
# a variant kernel built for a measurement).
test_kernel_dir() {
	if [ -n "${RKVM_KDIR:-}" ]; then
		echo "$RKVM_KDIR"
	else
		"$RKVM_TOOLS/build-kernel.sh"
	fi
}

# qemu_boot_initramfs DIR: DIR/initramfs-qemu-boot.cpio.gz for the QEMU
# boot test, the host's DIR/initramfs.cpio.gz followed by a second archive
# with QEMU and its guest (tools/rkvm/qemu-boot/mkinitramfs.sh), which the
# kernel unpacks over the first: the other runs keep their lean initramfs.
qemu_boot_initramfs() {
	"$RKVM_TOOLS/qemu-boot/mkinitramfs.sh" "$1/qemu-boot.cpio.gz" &&
		cat "$1/initramfs.cpio.gz" "$1/qemu-boot.cpio.gz" > "$1/initramfs-qemu-boot.cpio.gz"
}
