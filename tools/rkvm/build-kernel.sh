#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the test host kernel (bzImage + modules + UAPI headers) out of tree
# in rkvm's cache, keyed by kernel version + config fragment + patches. A
# build is trusted only once its .complete marker exists; anything else under
# that key is a half-finished build and is thrown away. Prints the build
# directory on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=$(kernel_dir)
mkdir -p "$RKVM_CACHE/kernel"
exec 9> "$RKVM_CACHE/kernel/.lock"
flock 9

if [ -f "$dir/.complete" ]; then
	echo "$dir"
	exit 0
fi

note "building the host kernel in $dir (about 15 minutes the first time)"
rm -rf "$dir"
mkdir -p "$dir/src" "$dir/build"
tar -xf "$RKVM_CACHE/linux-source/linux-source.tar.xz" -C "$dir/src" --strip-components=1
for p in "$RKVM_TOOLS"/kernel/patches/*.patch; do
	[ -e "$p" ] || continue
	patch -s -d "$dir/src" -p1 < "$p" || die "patch ${p##*/} does not apply"
done

kmake() { make -s -C "$dir/src" O="$dir/build" "${KMAKE_VARS[@]}" "$@"; }
kmake rustavailable >/dev/null || die "the kernel does not accept this Rust toolchain (make rustavailable)"
kmake tinyconfig >/dev/null
(cd "$dir/build" && "$dir/src/scripts/kconfig/merge_config.sh" -m -O "$dir/build" \
	"$dir/build/.config" "$RKVM_TOOLS/kernel/rkvm.config" >/dev/null)
kmake olddefconfig >/dev/null

# A fragment line that did not survive olddefconfig means a dependency is
# missing; building anyway would give a kernel that silently lacks it.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=n) opt=${line%%=*}
		grep -q "^$opt=" "$dir/build/.config" && { note "$opt is set but should be off"; bad=1; } ;;
	CONFIG_*) grep -qxF "$line" "$dir/build/.config" || { note "config lost: $line"; bad=1; } ;;
	esac
done < "$RKVM_TOOLS/kernel/rkvm.config"
[ "$bad" = 0 ] || die "the config fragment did not apply cleanly"

log="$dir/build.log"
note "make bzImage modules (log: $log)"
kmake -j"$(nproc)" bzImage modules > "$log" 2>&1 || { tail -40 "$log" >&2; die "kernel build failed"; }
kmake headers_install INSTALL_HDR_PATH="$dir/headers" >/dev/null
touch "$dir/.complete"

# Keep only this build: old keys are dead weight (1-2 GiB each).
for old in "$RKVM_CACHE"/kernel/*/; do
	[ "${old%/}" = "$dir" ] || rm -rf "$old"
done
echo "$dir"
